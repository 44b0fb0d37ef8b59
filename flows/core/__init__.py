"""The shared bottom layer: errors, settings, months, countries, products, numbers.

Everything else may import these modules; they import nothing of tradewatch's but each other.
"""
