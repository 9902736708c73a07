"""A tiny chat graph for Herald's tests: its model streams the answer token by token, with no network.

The reply depends on the user's message, so tests can ask for what they need:
- "please fail" makes the graph raise (the run ends with status error);
- "slowly" spaces the tokens 40 ms apart (time to cut a connection mid-run);
- anything else streams a short answer, a token every 5 ms (a fast model's pace);
- "timestamps N" streams N tokens 20 ms apart, each the Unix time in microseconds at which the model
  emitted it (scripts/langgraph-latency.sh measures engine chunk -> SSE frame with them);
"""

import asyncio
import time

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.graph import END, START, MessagesState, StateGraph


class PacedFakeChatModel(GenericFakeChatModel):
    """GenericFakeChatModel (which splits its answer at whitespace) with a pause before each chunk."""

    pause_seconds: float = 0.0

    async def _astream(self, *args, **kwargs):
        async for chunk in super()._astream(*args, **kwargs):
            if self.pause_seconds:
                await asyncio.sleep(self.pause_seconds)
            yield chunk


class ClockChatModel(GenericFakeChatModel):
    """Streams `count` tokens `pause_seconds` apart, each the microsecond it was emitted at."""

    count: int = 50
    pause_seconds: float = 0.02
    # Time for a second reader to join the run's stream live before the first token.
    start_delay_seconds: float = 0.5

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        time.sleep(self.start_delay_seconds)
        for _ in range(self.count):
            time.sleep(self.pause_seconds)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=f"{time.time_ns() // 1000} "))
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        text = "".join(chunk.text for chunk in self._stream(messages, stop, run_manager))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


async def reply(state: MessagesState):
    text = state["messages"][-1].content
    if text.startswith("timestamps"):
        count = int(text.split()[1]) if len(text.split()) > 1 else 50
        model = ClockChatModel(messages=iter([]), count=count)
        return {"messages": [await model.ainvoke(state["messages"])]}
    if "please fail" in text:
        raise RuntimeError("the test graph failed on purpose")
    words = " ".join(f"word{i}" for i in range(40)) if "slowly" in text else "a streamed answer of several tokens"
    answer = f"You said: {text}. Here is {words}."
    model = PacedFakeChatModel(
        messages=iter([AIMessage(content=answer)]), pause_seconds=0.04 if "slowly" in text else 0.005
    )
    return {"messages": [await model.ainvoke(state["messages"])]}


builder = StateGraph(MessagesState)
builder.add_node("reply", reply)
builder.add_edge(START, "reply")
builder.add_edge("reply", END)
graph = builder.compile()
