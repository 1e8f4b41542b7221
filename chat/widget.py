"""The chat widget's HTML for a page: one stylesheet, one element, one script."""

from __future__ import annotations

from html import escape


def widget_html(channel: str) -> str:
    """Markup that puts the chat of ``channel`` where it is inserted (chat/static/chat.js
    finds every ``[data-castway-chat]`` element)."""
    return ("<link rel=stylesheet href='/chat/static/chat.css'>"
            f"<div class=castway-chat data-castway-chat='{escape(channel)}'></div>"
            "<script src='/chat/static/chat.js' defer></script>")


def with_chat(player_html: str, channel: str) -> str:
    """``player_html`` with the chat beside it (below it on narrow screens)."""
    return (f"<div class=castway-chat-row><div class=castway-chat-player>{player_html}</div>"
            f"{widget_html(channel)}</div>")
