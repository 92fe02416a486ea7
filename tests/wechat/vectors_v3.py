"""WeChat Pay v3 test vectors, copied from PROTOCOL.md §10 (H, L5, L6)."""

# H: the official doc's test-only merchant key (2048-bit, PKCS#8), and its public key, which
# the tests also use as a fake WeChat "platform" key.
TEST_PRIVATE_KEY = b"""-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCm2mb6q8gMKH/3
CNTbpJAIrbqiBiQGEOtjGcBrDYltsGynWgNscqT7WvfzU14FQbYcQUC5T4Wvva7m
i3fIp3OgX8VqMDNA0qebnr38Pe6kqiLyZgFpJPXlSKDyPyqhRbVTbXssvSMQeVKc
dXeVxoNNeoOlNFHgF/P0io6AmAVnz+hN8SiZKuOsth5/zUTLGvtkgxBcQooQrtXh
RcpLT798OyIb9xeJ2HO3xRtMv2+perEzb4gMibI74UBz+2QEbnkubPE+2jU2rRZu
dnNEz/BPOt3Qj/w2V6/G0VumGDh6+UeMU0jv4aupHztWITC4Akn0l7lBCNy3lgl8
VFaJnkIxAgMBAAECggEAYGL8aESB7NwciDWW2UdoWUsa7GxFtSdjAz2mFXGdeTsY
mVh7b9OOkRGM+Qio4LqEHDBp1mMk5E/cUJwy1zw8pGGO5nfvs7u9TT3XnHaefIs4
YvUgTYAneIuLRkXNN5rQU+CD7mVYczTSz0Vgjqo9wa1LjUz7G0xbBmJgTdMEFGJs
eJjy6AbJo0CGIwp6HJbTm4CmOUgXnnDAIbEGTIRImkZFH/rzneIeR7oZ77FVwxr1
CZB2gfRCov/yRPbw8vnryYkmvQ7D/ze3j5097vRg/MoDGBSdoOwcmo75vyofr0AS
zytMjmHYyifqkf5slPropSiJeGf4p/7gtKyF6dE/XQKBgQDVAlJ+4U5ZVGOuDc3+
sAhz8CTzgFNlq9vKuSoFK6hOz2L+cwj+E7NXGkOe2DsHHZNy2Xqxk7caKhPEp1z9
hhpMpyLVMoFt6CKemyoRBWDCQwLLwem9SZF/IAyovBkLiH36P42Jm26gUkNMKC/5
Zhtqxf6RZgRQzbVudJi47vIRCwKBgQDIh0+v27Oo+DM3fhObH4I1NrXpWOEGH7OQ
G1dEsMuFYF4hjGhg0kBEP3w9vVdl2+mRllZKTsx9oqjb8OibPLLIH8xsdbAB0WLf
JvjLu4wl/ILUzN1RI03dWnnv2EnEeQn6c3hizvrJ9wR5U4ue9RPVnQooJ0hZF1PU
uCL5fWK3MwKBgElReU/PAYbh80WP3t3Rfbdaa32dKBeQ5iCLR5lsA4zM+YgX1HqQ
EWTj126vgvHaDkyz6vWAoL/Sx+cirHFfXWIRDX5Q2hgYlQH+6qXdMgbrxeSYpHnQ
/tHBGFpkFELSAnrGsVMyOwvYBO4LzyeLK9i+ufcWJFoj1FVmsMLHDG8tAoGARdbi
iQQCoYG4DMarO2aQ6cmhN6EN1h0qY7EyBqlwaIZ0okiNfdMcMOjPc41DKCWcRmlO
qlihXcxN9TQFPzO3rH1urAOdBjUPs1qWYhZyrDQyuLyVBBJApyxAtajloDjrob+f
mQIvVDHk7ACN6xG+E7K6+9salnTKbJapD618uQMCgYBNy6XUvzLkP/A1U/UZdtcx
l8GwU/dturLxz4CyGbqDw4ubaYY2e13lnqHUqQgPtiSyH51nq3tdo8G0YAJdfkSv
KvnfslW91fyEBUKnkdW1o3/1UFU/wprZ7ixVL/F42A4xDu7OFE8EnweJOZ0jWceE
OdhCkaIGBCfRnlECRK8UyQ==
-----END PRIVATE KEY-----
"""
TEST_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAptpm+qvIDCh/9wjU26SQ
CK26ogYkBhDrYxnAaw2JbbBsp1oDbHKk+1r381NeBUG2HEFAuU+Fr72u5ot3yKdz
oF/FajAzQNKnm569/D3upKoi8mYBaST15Uig8j8qoUW1U217LL0jEHlSnHV3lcaD
TXqDpTRR4Bfz9IqOgJgFZ8/oTfEomSrjrLYef81Eyxr7ZIMQXEKKEK7V4UXKS0+/
fDsiG/cXidhzt8UbTL9vqXqxM2+IDImyO+FAc/tkBG55LmzxPto1Nq0WbnZzRM/w
Tzrd0I/8NlevxtFbphg4evlHjFNI7+GrqR87ViEwuAJJ9Je5QQjct5YJfFRWiZ5C
MQIDAQAB
-----END PUBLIC KEY-----
"""

H_MCHID = "1900007291"
H_SERIAL = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB"
H_TIMESTAMP = "1554208460"
H_NONCE = "593BEC0C930BF1AFEB40B4A08C8FB242"
H_BODY = (
    '{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"Image形象店-深圳腾大-QQ公仔","o'
    'ut_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpa'
    'y/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1'
    'Q9zNjWeS6o"}}'
).encode()
H_SIGNATURE = (
    "jnks4dlrPw3ZX+ozVvSK39oa0t7OMBsg83BHAwd8BRdUFiVaQNTLTvci+wURgP1OQBbKYhFGvt7iqYpDSTQkp7Uq"
    "1sltaQKyncCyrA1g88m5bsKERQfPyT0ahSwKTYJ1CAn9QiJuSJRq1QsQs07eehbU/k9BCS51jTyc1Jpsi2H77HF9"
    "f/BnjXAOP3/sPObg6V5Ee4EzwLox684hhuMuIwHo7D8KFk3LIHOKDcNI4It1aCXydFWNpNK+SG86VUDe5kwoDpw4"
    "Ulqfu9z8OFDGbDs9TCxEv8iqQzbpxOlEVoOe2kalSYM5kApQb3nZcxdUtoE0liJGW3RGUNE0t4v01A=="
)
H_GET_CERTIFICATES_SIGNATURE = (
    "JNEITrKv8DWEtBJGZtxG9ARa+eIZDIn1Ht3MQM5j9jP77TtHdfCqLjpwevfWftBuaGMfEdiu2sWYtLvnZIoLW3FH"
    "10OVCBzKncid5xClTwav8JX+uDeGBBX8w64iHvFyuQj8ukZT+F1AFJii8hmXLD8Os90thnL0bfJYLo/4K237TH4d"
    "Ed44NTH9ElFb/ykrvv9RBs+mCNpy5IUe2Qxhba3d3RiMqhWK2sSr3tsVzQihJ0TPMnjWqoU2W5Y/v3rBFDmLhqe0"
    "ZW6A4vyvjmiR0v/8XEI25Py4PNyZXszsdl4j0zLqelUJxGEMUBhYg1LIoDPjYMlA9HV1yKD6+JYZJA=="
)

L5_BODY = (
    '{"id":"EV-2018022511223320873","create_time":"2023-11-15T14:15:31+08:00","resource_type"'
    ':"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功","resource":{"ori'
    'ginal_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"GDixFj/GnJ8hZvG55'
    "LUGVatYRxpvG7AeGnO0gSw+jbf8c/Cf0g6HESVD8ynOE+UZkpMPUCW04nD+eFstnbLSD88/v0lyUoc41XNyNy4bK"
    "iJAEppLaqGPHa7Qw0yXF2gtSzAQEMg1gljfcOKd2Yxeg47XXCQRpFi1Rss8NyHtsjFrc1XvUitPU4SDWmo8uZZMu"
    "w5r8Cdj0W+nYvRbGBKVk1maqcvJBLTNJPmCySH7EkcOvJwmNt1tvLmvhl9tbBjh4R0nn0/SfYW5tr0E16ZFmFPO6"
    "t6IAQwctMPu01lg+7lp8pAfJUNHHJyCIPilOuK2QcpVDMEV8gjWQjmgWE2JXGed8AtYgPKgqsIsqAbWIET54Ny/d"
    "Fg7U+U/yAp7sP1dt2creVuUORcduUXx4exf6qIRPtm33a9SjfIl6L5Egta/zUGVhIVV9xxej8CPafy+/RvhVGKkh"
    "z2cMg2LyFqf0hcov2c7K0HgcEbkj5igXHL4cUqNqEEjpv31JtSMuM5EyZZoGbWFhfOWuHUBQnveygrJwSGsllEbZ"
    '6Q/8xylyARVoBacsr607o2foebv+ubj","associated_data":"transaction","nonce":"fdasflkja484"}'
    "}"
).encode()
L5_TIMESTAMP = "1700028931"
L5_NONCE = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
L5_SIGNATURE = (
    "H4ETVR9+LH9FbK481W4sFejgFZZD37uQw44wq1YdNa2gnFJuwaID5eCLKryjK2ZXTubjduqV9DoviHAvjapcAYP5"
    "aUrfAlWXjYbG5/4yugk3QvqYywpVaaM8bIuEtSrhaK6GEyLjnMP+rq/rRW0hrjnIpW7OTO+USOesRy46AQspzg2K"
    "lWN6apyYLGuVgxXtaJA0bYVEwp8ECHVma6LcmFlmnPrwDNWRXaxcy5WUg5ijD2U36UovgJkm4t0bF5+hJYFzNrms"
    "hvvvRo169YMNhwWEkyPjyO8DKhxNokCCpaISuShg6twPwVDcmR64MindNAS8KU7x3jBLlbOrivmHWQ=="
)
L5_API_V3_KEY = "0123456789ABCDEFghijklmnopqrstuv"
L5_PLAINTEXT = (
    '{"mchid":"1900000109","appid":"wx1234567890abcdef","out_trade_no":"ORD20231115000001","t'
    'ransaction_id":"4200001234202311151234567890","trade_type":"JSAPI","trade_state":"SUCCES'
    'S","trade_state_desc":"支付成功","bank_type":"OTHERS","attach":"","success_time":"2023-11-15'
    'T14:15:30+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":1,"'
    'payer_total":1,"currency":"CNY","payer_currency":"CNY"}}'
)

L6_SIGNATURE = (
    "mYKQTNyJe2WQuj1TKVvItm5NsD7ZhlR7Oi3vODhReAz7v6EiOVln4ykjdEZCIj/Fmb1vdFa2BP7IXakNta8BxDus"
    "mbHt7wc31vYiyP+h4CYQf3cA/kq80/sDK+eVqqwCy+DSSmBahiGd56NgIVglDScUW4f89S1Y189x61FPzbxtPWtu"
    "xuwL4q5IE83tGiJ3337NBgaUOk0Ty2DygibOzk4PMKQU6KgJzrgtZ/e35hjA3+Ol8mq4Xkegf19+BeFwTjUEA7ae"
    "4xosbO1nomVayIfHdMKGPXv1XF4f3szAEa2YcibvXg9dyzwgU1OdMqYEDBSy9BcgBvY/wRSiiJOZGA=="
)
