"""The ratio baseline: the least a FastAPI endpoint costs on this machine, served like Duet."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
