# Reads NCOMPASS_API_KEY (your key) and NCOMPASS_BASE_URL (optional: another server, e.g. `ncompass serve`).
# The nCompass 0.0.x client with more control: sessions, the model's state and the streamed answer.
from ncompass_openai import nCompass


def fine_grained_control():
    # The client reads the API key from the environment variable named here.
    client = nCompass(custom_env_var="NCOMPASS_API_KEY")
    # Starts a time-billed session (and waits for the model).
    client.start_session()
    # Blocks until the model can answer; client.model_is_running() is the non-blocking check.
    client.wait_until_model_running()
    params = {
        "max_tokens": 300,  # max output tokens requested
        "temperature": 0.5,
        "top_p": 0.9,
        "stream": True,
    }
    prompt = "Give me 5 tools I can use to accelerate inference of my ML model?"
    # complete_prompt returns an iterator of text pieces, printed here as they arrive.
    response_iterator = client.complete_prompt(prompt, **params)
    client.print_prompt(response_iterator)
    # Stops the session: billing stops here.
    client.stop_session()


fine_grained_control()
