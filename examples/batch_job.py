# Reads NCOMPASS_API_KEY (and NCOMPASS_BASE_URL if set). A batch job: ten chats through one session.
import json
import tempfile
from pathlib import Path

from ncompass_openai import NCompass

questions = [f"In one sentence, why does batching {n} requests save time?" for n in range(1, 11)]
chats = [[{"role": "user", "content": question}] for question in questions]

with NCompass() as client, tempfile.TemporaryDirectory() as folder:
    output = Path(folder) / "answers.jsonl"
    # The model is brought up first, then one session runs every chat and stops when the last is written.
    summary = client.run_batch(chats, output=output, defaults={"max_tokens": 48})
    for line in output.read_text().splitlines():
        record = json.loads(line)
        answer = record["response"]["body"]["choices"][0]["message"]["content"]
        print(f"{record['custom_id']}: {' '.join(answer.split())}")
    print(f"{summary.succeeded} answered, billed {summary.billed_seconds:.1f} s")
