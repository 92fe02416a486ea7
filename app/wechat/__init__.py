"""WeChat protocol adapter: signing, XML, typed models and async clients.

Knows nothing about routes or the database; every function here is either pure or takes the
shared ``httpx.AsyncClient`` it talks through.
"""
