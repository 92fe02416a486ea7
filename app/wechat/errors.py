"""The one small exception tree for talking to WeChat (PROTOCOL.md §1.2, §2.2, §6).

Outside failures are split once, here: ``WeChatUnavailable`` means the outcome is unknown or
WeChat asked us to try again (timeouts, transport errors, 5xx, unparsable or untrusted bodies,
``SYSTEMERROR``, ``BIZERR_NEED_RETRY``, code2session ``-1``); ``WeChatRejected`` is WeChat's
final word and carries its codes for the client. ``InvalidNotification`` is for messages
WeChat (or someone pretending to be WeChat) sends us.

No message or repr here ever contains the API key, the app secret or a ``session_key``: the
constructors only take WeChat's own codes and texts, and callers never pass request data.
"""

from __future__ import annotations

from enum import StrEnum


class WeChatError(Exception):
    """Base of every WeChat adapter error."""


class WeChatUnavailable(WeChatError):
    """Retryable: WeChat could not be reached, failed, or answered with something untrusted.

    The outcome of the call is unknown; callers must not assume it did or did not happen.
    """

    def __init__(self, message: str, *, err_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.err_code = err_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(message={self.message!r}, err_code={self.err_code!r})"


class WeChatRejected(WeChatError):
    """Final: WeChat refused the request; never retried.

    ``return_msg`` alone means the protocol layer refused it (``return_code=FAIL``); ``err_code``
    and ``err_code_des`` come with a business refusal (``result_code=FAIL``) or, for the
    mini-program API, carry its ``errcode`` (as text) and ``errmsg``.
    """

    def __init__(
        self,
        *,
        err_code: str | None = None,
        err_code_des: str | None = None,
        return_msg: str | None = None,
    ) -> None:
        self.err_code = err_code
        self.err_code_des = err_code_des
        self.return_msg = return_msg
        super().__init__(self._describe())

    @property
    def reason(self) -> str:
        """The most specific human text WeChat gave, for passing through to the client."""
        return self.err_code_des or self.return_msg or self.err_code or "rejected by WeChat"

    def _describe(self) -> str:
        return f"{self.err_code}: {self.reason}" if self.err_code else self.reason

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(err_code={self.err_code!r}, "
            f"err_code_des={self.err_code_des!r}, return_msg={self.return_msg!r})"
        )


class RefusalKind(StrEnum):
    """Why an incoming notify was refused, for auditing and the reply."""

    XML = "XML"  # not a flat UTF-8 XML document within the size limit
    PROTOCOL = "PROTOCOL"  # return_code is not SUCCESS: nothing to act on
    SIGNATURE = "SIGNATURE"  # unknown sign type, or the signature does not verify
    MERCHANT = "MERCHANT"  # appid or mch_id is not ours
    FIELDS = "FIELDS"  # required fields missing or malformed
    DECRYPTION = "DECRYPTION"  # a refund notify's req_info does not decrypt under our key


class InvalidNotification(WeChatError):
    """An incoming notify that must not be acted on: malformed, unsigned, forged, or not ours.

    ``reason`` is safe to put in the ``return_msg`` of the FAIL reply.
    """

    def __init__(self, reason: str, kind: RefusalKind) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
