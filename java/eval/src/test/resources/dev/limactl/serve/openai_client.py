"""limactl serve driven by the official OpenAI Python SDK: chat, streaming, completions with logprobs,
models and an error. Prints one JSON line of what it saw; exits non-zero on any surprise.

usage: openai_client.py BASE_URL API_KEY MODEL
"""
import json
import sys

import openai

base, key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How should I store coffee?"}]
chat = client.chat.completions.create(model=model, messages=msgs, max_tokens=6, temperature=0, seed=5)
streamed = ""
usage = None
for chunk in client.chat.completions.create(model=model, messages=msgs, max_tokens=6, temperature=0, seed=5, stream=True,
                                            stream_options={"include_usage": True}):
    if chunk.choices and chunk.choices[0].delta.content:
        streamed += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage.completion_tokens
comp = client.completions.create(model=model, prompt="How should I store coffee?", max_tokens=0, echo=True, logprobs=1)
try:
    client.chat.completions.create(model="gpt-4o", messages=msgs)
    error = None
except openai.NotFoundError as e:
    error = e.status_code
print(json.dumps({
    "chat": chat.choices[0].message.content, "finish": chat.choices[0].finish_reason, "streamed": streamed, "usage": usage,
    "echo": comp.choices[0].text, "n_logprobs": len(comp.choices[0].logprobs.token_logprobs),
    "first_logprob": comp.choices[0].logprobs.token_logprobs[0], "models": [m.id for m in client.models.list().data], "error": error,
}))
