# Reads NCOMPASS_API_KEY (your key) and NCOMPASS_BASE_URL (optional: another server, e.g. `ncompass serve`).
# Chat completions with the nCompass 0.0.x client: the model's chat template, add_generation_prompt=True.
import os

from ncompass_openai import nCompass

client = nCompass(api_key=os.environ["NCOMPASS_API_KEY"])
client.start_session()
client.wait_until_model_running()
params = {
    "max_tokens": 300,  # max output tokens requested
    "temperature": 0.5,
    "top_p": 0.9,
    "stream": True,
}
messages = [
    {
        "role": "assistant",
        "content": "Hello, how can I speed up your ML inference today?",
    },
    {
        "role": "user",
        "content": "What tweaks can I make to my model to make it faster?",
    },
    {
        "role": "assistant",
        "content": "Ah, the age old question.",
    },
]
response_iterator = client.complete_chat(messages=messages, add_generation_prompt=True, **params)
client.print_prompt(response_iterator)
client.stop_session()
