"""Chat requests to any OpenAI-compatible endpoint, through the official `openai` client.

`run_chat_requests` (run) answers what the response cache (cache) already holds and sends the
rest through the synchronous runner (sync_runner) or the Batch API runner (batch_runner), with
retries (connection), the caller's validation and one repair request (answers), within a budget
(budget). The API key is read from OPENAI_API_KEY only and never logged, stored or put in an error (api_key).
"""

from inscl.core.llm.answers import InvalidAnswer, default_repair
from inscl.core.llm.api_key import get_api_key
from inscl.core.llm.cache import response_cache_path
from inscl.core.llm.connection import ApiError, retry_delay
from inscl.core.llm.results import ChatResult, summarize
from inscl.core.llm.run import run_chat_requests

__all__ = [
    "ApiError",
    "ChatResult",
    "InvalidAnswer",
    "default_repair",
    "get_api_key",
    "response_cache_path",
    "retry_delay",
    "run_chat_requests",
    "summarize",
]
