"""The surface: the collector that archives every node, notices what is missing, and the review data.

Imports edge (topics, message formats, vocabulary); edge never imports surface.
"""
