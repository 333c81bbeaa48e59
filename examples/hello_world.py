# Reads NCOMPASS_API_KEY (your key) and NCOMPASS_BASE_URL (optional: another server, e.g. `ncompass serve`).
# The nCompass 0.0.x one-liners: start a session, stream completions, stop the session.
# You are billed for the time between start_session and stop_session.
import os

from ncompass_openai import nCompassOLOC


def hello_world(API_KEY):
    prompt = "How do I make pizza?"
    nCompassOLOC().start_session(API_KEY)
    nCompassOLOC().complete_prompt(
        API_KEY, prompt, max_tokens=300, temperature=0.5, top_p=0.9, stream=True, pprint=True
    )
    nCompassOLOC().stop_session(API_KEY)


def run_multiple_prompts(API_KEY):
    # Start the session once, then run as many prompts as the conversation needs.
    nCompassOLOC().start_session(API_KEY)
    for _ in range(3):
        prompt = "Give me 5 tools I can use to accelerate inference of my ML model?"
        nCompassOLOC().complete_prompt(
            API_KEY, prompt, max_tokens=300, temperature=0.5, top_p=0.9, stream=True, pprint=True
        )
    # A session left running keeps billing until it is stopped (or its idle timeout passes).
    nCompassOLOC().stop_session(API_KEY)


def use_streaming_iterator(API_KEY):
    # With pprint=False, complete_prompt returns an iterator of text pieces to use as you like.
    nCompassOLOC().start_session(API_KEY)
    prompt = "Give me 5 tools I can use to accelerate inference of my ML model?"
    for _ in range(3):
        iterator = nCompassOLOC().complete_prompt(
            API_KEY, prompt, max_tokens=300, temperature=0.5, top_p=0.9, stream=True, pprint=False
        )
        nCompassOLOC().print_response(iterator)
    nCompassOLOC().stop_session(API_KEY)


api_key = os.environ["NCOMPASS_API_KEY"]
hello_world(api_key)
run_multiple_prompts(api_key)
use_streaming_iterator(api_key)
