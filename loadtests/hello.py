"""A bare FastAPI hello endpoint: the HTTP ceiling benchmarks compare against."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "world"}
