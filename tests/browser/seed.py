"""Seeding the browser tests' gateway over REST, as an app would."""

from __future__ import annotations

from typing import Any

import httpx


async def post_vybe(live: Any, user: str, content: str, **fields: Any) -> dict[str, Any]:
    """Post a vybe as ``user`` (``fields``: more of the body, e.g. ``is_anonymous``); returns the created vybe."""
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.post("/api/vybes", json={"content": content, **fields},
                            headers={"Authorization": f"Bearer {live.token(user)}"})
        assert r.status_code == 201, r.text
        return r.json()
