"""The HTTP front door (API v1 and the web page) over the same `JobService` as `serve`.

`app` the FastAPI routes, `book` per-job records and event logs fed by the service, `store` the
on-disk index and retention, `security` tokens and the upload limit, `web` the page at `/`,
`server` the uvicorn launcher behind `serve --http` and `web`.
"""
