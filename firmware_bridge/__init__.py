"""The ADC board's serial link: frame format, C encoder, decoder, reader, clock and board simulator.

Imports nothing from edge/ or training/. See PROTOCOL.md for the wire format.
"""
