# Reads NCOMPASS_API_KEY (and NCOMPASS_BASE_URL if set). A conversation whose earlier turns the server caches.
# Each turn resends the whole conversation; the llama engine decodes only what its prompt cache lacks,
# and usage.prompt_tokens_details.cached_tokens says how many prompt tokens it did not decode again.
from ncompass_openai import NCompass

messages = [{"role": "system", "content": "You are a travel guide. Answer in one short sentence."}]
questions = ("Where should I go in Portugal?", "And what should I eat there?", "When is it warm?")

with NCompass() as client:
    client.deployment.ensure_running()  # bring the model up before the session bills
    with client.session():
        for question in questions:
            messages.append({"role": "user", "content": question})
            answer = client.chat.completions.create(messages=messages, max_tokens=40, temperature=0)  # type: ignore[arg-type]
            text = answer.choices[0].message.content or ""
            messages.append({"role": "assistant", "content": text})
            usage = answer.usage
            assert usage is not None
            details = usage.prompt_tokens_details
            cached = details.cached_tokens if details is not None and details.cached_tokens else 0
            print(f"{' '.join(text.split())}  [{cached} of {usage.prompt_tokens} prompt tokens cached]")
