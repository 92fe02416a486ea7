"""Refund notify vectors from PROTOCOL.md §10: L4 (self-generated) and G (wechatpy)."""

from __future__ import annotations

# §10 L4: encrypted with the §10 L APIv2 key (tests.wechat.conftest.API_KEY).
L4_PLAINTEXT = (
    "<root><out_refund_no><![CDATA[RF20231115000001]]></out_refund_no><out_trade_no>"
    "<![CDATA[ORD20231115000001]]></out_trade_no><refund_account>"
    "<![CDATA[REFUND_SOURCE_UNSETTLED_FUNDS]]></refund_account><refund_fee><![CDATA[1]]>"
    "</refund_fee><refund_id><![CDATA[50300000012023111512345678901]]></refund_id>"
    "<refund_recv_accout><![CDATA[支付用户零钱]]></refund_recv_accout><refund_request_source>"
    "<![CDATA[API]]></refund_request_source><refund_status><![CDATA[SUCCESS]]></refund_status>"
    "<settlement_refund_fee><![CDATA[1]]></settlement_refund_fee><settlement_total_fee>"
    "<![CDATA[1]]></settlement_total_fee><success_time><![CDATA[2023-11-15 14:20:00]]>"
    "</success_time><total_fee><![CDATA[1]]></total_fee><transaction_id>"
    "<![CDATA[4200001234202311151234567890]]></transaction_id></root>"
).encode()
L4_REQ_INFO = (
    "T7M6SCcc3K2tdBPQJ0hHSC5bpP6SbJXnCdRzJn4V/e11M5vdhwvVcD6MqudXSckudMQzz4TtWJg1G45t+bLD0DDX"
    "tC7WbytUnKsIxIVJ1+OUjjTuUBNZcn5uFMVT/kWXw3u8ypTUOVJ8zGi6eOsYFCznsuO+BVrFOpBS0WqMEv7fd+dw"
    "VS7GRxhSeZgep0fDJy9fo7RJ0Wv6GVGCweg6muc26USbP880hg+jmR4lfkTt7QaXSI/A29jZMOqR20aSnil8gI/b"
    "Iop53Qa8pxosVxTmogtfKoS47vhge4HUKftE/FPBC4sekzXaugMTHJ3v6tuGu8zPfeB/wmz5hyfJJy7x+2dcmzs6"
    "jbhG8A9KEEWrMZZFuHw6nRgeEPQLf2HL29FPNnAtzNrNt6t/Fht3VcXWpX7S0GMeCqcICC6mw9HB44UApOMNLRlW"
    "Nzvxzxl0elrGJAGVhm5ymT/9uZ5+yeyn9AArHBjJmN4oNgMdOMvH3TCaEUV1Cc500Tv20f7uCurSnVuOO7CAvsT1"
    "FvF6Hb+SGQfYLhqWcsQJAGY8c7qBUHHC1T73+jQmnuqpmm3TolRZU3jqAMQvC9dfmuNiOodiSRZRJB5i2YtAtGnl"
    "8+r7fFaUMZ4rvy9PjZnkVtlPf6MaTQz63mHzXqN6hOLoGiM88AvIVOnleOh/Kl3cTLCvGusfJtpNQ4QajcxyPHKd"
    "a1KHX65GkAGNJsssaUYC0nZCp3VrasnGsb0v8EgRKrTS8rl4cUR+89y4P/E59Skdn/pVGDiWd+RYusv7RVPm54Uh"
    "E3UNqJsicYfDp+xZ2A49JFbXHNfnN3CTqxF3bzB/mgXVJIp5Z0I+Cxn++T6hPGgDHOlZQkPjn0cVDuvIw0YDx5vO"
    "2s8fQndpsEc4BihvA7pdxTYvfB4+fAQi9ogIJ+QEGGg//sRjuULR7S1GQ6gZMcLCkXpxhU2+yVrUA7H4L+G7Gye7"
    "Jku4AEuM7WC/S6sS8cq+wIq5WMVdcPDAYD7m05WSqqLD5wCW5OTtw3gj6ovFD6EluDmDC+lNQfuqJg=="
)

# §10 G: wechatpy tests/test_crypto.py::test_refund_notify_decrypt_message.
G_API_KEY = "OF4Ne3znh8KqL0V4NqmALQa0uXMYKcEk"
G_REQ_INFO = (
    "51A27s9LxbaEv52nBOrqa0FCs3HVIM31Wc3BpNqSCP5MQlS8HL1Vl7mZ21043B7PZy7adtOZGtZv44lGl0U8JXlV"
    "FL4Ltxsw6+pACjZBB0Qi1LUDjFlP2IyTxYX4eC57kxnCphDdIyRkU67kOWW/HN/efggTUlaPJkoL5kVe9Y1MZF55"
    "IHR4lwGI7WtVLtxATX1tkAVZF+/ri0WlPXo9+GkqeB2/id6Ozw09Tqp8C/TKbmKBpRhTCRU2TzfQoLa6fjbgETFH"
    "J795aEMyUZPQYbbsz6U9Rj9lUzEh8+Oc8KYTXa9zVk+nnFr82+yjffb3d36ylTe0y/VmYf90rf9cbiJQdM00zZ8Q"
    "a99SlMTs2wjOO4Mi4Btlg1PebsLF8TkqbSZkRJDGs61UunUB8Km1b/VeBxXuv4D3H7DiVZ9Fj7lq2j07zFDpxxlh"
    "hen7kZvMWWO3lrfFpA9c4eFOqfF9SxcU9nBmHfDD1g/dsrMl6+a71xQHJ/gn80fZOefUBv92ggqutsuJ4gd4Oqkm"
    "O0XUs8e4XQyLpra+LvpmahsU5lBIZuQcMq3FHrqe8hXTfp3+3qym2wGfvPI75jx41VZwmBQy9izB1Id+A5lUeXC5"
    "QJy+ryDu/dWkhB+aMjkElaI/Epmcc/IEPaI73W6Hc58hNednOM536rPnn+GDc98PdGszpLTjmaZSu8dtqwPaym66"
    "yRqFQowzFoBbooik57iHUFBCeWya7XcXYL9WKhRF3uIZM+Kfv9/Zs2pF+w9/EJpltuzPpT1GP2VTMSHz45zwphFl"
    "S2lX8wHyZ+k9n2dptzQqpOCPedt5iQAmAe1oNQMxNdPDH9g68x9UzWD1kfK/dPO+3NPAh0XG+io4x15fIknNf7JL"
    "jpAuWicMMzCdwC4hhqeYOzQ+pC9f2xJXi5YViNKIZY69oO8eoHYRitLZrHLgx3oB2zimmqX6BI+DMklKAzAqqgGm"
    "bFxcVTvxZB6cMCx+H7TTWXnjAG+6A3SrCcxg0l5+UB93pkAYR7SVJ+VaZoiBqlqnZvb7IM17n9XaaFntlzvbbFCI"
    "a7OnOQb5Lvw="
)
