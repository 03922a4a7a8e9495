"""Tenant-declared HTTP tools: argument validation (JSON schema), host allow-list, timeouts.

A tool that is not configured, refused, slow or broken raises `ToolError`; the dialogue then apologises and
offers a person — it never makes an answer up.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from services.dialogue.flows import Tool

log = logging.getLogger(__name__)


class ToolError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ToolRunner:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def run(self, name: str, tool: Tool, arguments: dict[str, Any], *, allowed_hosts: list[str]) -> dict[str, Any]:
        try:
            Draft202012Validator(tool.parameters).validate(arguments)
        except SchemaError as exc:
            raise ToolError("invalid_arguments") from exc
        template = tool.resolved_url
        used = {key for key in arguments if "{" + key + "}" in template}
        url = template
        for key in used:
            url = url.replace("{" + key + "}", quote(str(arguments[key]), safe=""))
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolError("not_configured")
        if parts.hostname not in allowed_hosts:
            raise ToolError("host_not_allowed")
        rest = {k: v for k, v in arguments.items() if k not in used}
        started = time.perf_counter()
        try:
            response = await self.client.request(
                tool.method, url, timeout=tool.timeout_s,
                params=rest if tool.method == "GET" else None,
                json=rest if tool.method != "GET" else None)
        except httpx.TimeoutException as exc:
            raise ToolError("timeout") from exc
        except httpx.HTTPError as exc:
            raise ToolError("unreachable") from exc
        finally:
            log.info("tool called", extra={"supportbot.tool": name,
                                           "event.duration": int((time.perf_counter() - started) * 1e9)})
        if response.status_code >= 400:
            raise ToolError(f"http_{response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise ToolError("invalid_response") from exc
        return body if isinstance(body, dict) else {"result": body}
