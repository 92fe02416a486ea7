"""WeChat mini-program login and WeChat Pay backend."""
