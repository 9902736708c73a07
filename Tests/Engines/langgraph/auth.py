"""API-key authentication, as a LangGraph Platform deployment has: every request needs `x-api-key`."""

import os

from langgraph_sdk import Auth

auth = Auth()
EXPECTED_KEY = os.environ["TEST_ENGINE_API_KEY"]


@auth.authenticate
async def authenticate(headers: dict) -> Auth.types.MinimalUserDict:
    if headers.get(b"x-api-key", b"").decode() != EXPECTED_KEY:
        raise Auth.exceptions.HTTPException(status_code=401, detail="invalid or missing x-api-key")
    return {"identity": "herald"}
