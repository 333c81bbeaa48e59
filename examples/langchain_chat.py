# Reads NCOMPASS_API_KEY (your key) and NCOMPASS_BASE_URL (optional: another server, e.g. `ncompass serve`).
# LangChain through nCompass (pip install 'ncompass-openai[langchain]'): a prompt template piped into
# ChatNCompass, inside one session that is stopped when the block ends, however it ends.
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from ncompass_openai.langchain import ChatNCompass, NCompassLLM

chat = ChatNCompass(max_tokens=60, temperature=0.5)  # the key's model: no model name needed
prompt = ChatPromptTemplate.from_messages(
    [("system", "You answer in one short paragraph."), ("user", "How can I make {thing} faster?")]
)
chain = prompt | chat | StrOutputParser()

with chat.session(idle_timeout=300) as session:
    chat.ensure_running()  # a cold start takes minutes on nCompass: this waits for it
    for piece in chain.stream({"thing": "my model's inference"}):
        print(piece, end="", flush=True)
    print()
    print(NCompassLLM(max_tokens=30).invoke("Once upon a time"))
print(f"session {session.id} stopped")
