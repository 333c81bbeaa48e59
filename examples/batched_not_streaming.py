# Reads NCOMPASS_API_KEY (your key) and NCOMPASS_BASE_URL (optional: another server, e.g. `ncompass serve`).
# Batched answers instead of streams: stream=False returns the finished text (a list for a list of prompts).
import os

from ncompass_openai import nCompassOLOC


def batched_not_streaming(API_KEY):
    nCompassOLOC().start_session(API_KEY)
    prompt = "What does the fox say?"
    response = nCompassOLOC().complete_prompt(
        API_KEY,
        prompt,
        max_tokens=300,
        temperature=0.5,
        top_p=0.9,
        stream=False,  # this sets batch processing
    )
    print(response)
    nCompassOLOC().stop_session(API_KEY)


batched_not_streaming(os.environ["NCOMPASS_API_KEY"])
