"""`voco serve`: an OpenAI-compatible HTTP server that compresses each image (or video frame) once
and answers every later question from its VoCo cache.

  store.py     content-addressed cache store: memory (LRU by bytes) and an optional folder of
               VoCo cache files (the safetensors format of core/cache.py) that survives restarts
  protocol.py  OpenAI chat requests -> prompt turns and media; limits; one-line request errors
  engine.py    one worker batches concurrent requests: new images compressed together, answers
               generated together (up to --max-batch), tokens streamed to each request
  metrics.py   the Prometheus metrics
  app.py       the FastAPI application: /v1/chat/completions, /v1/voco/compress, /v1/models,
               /health, /metrics

The verb itself (flags, uvicorn) is apps/serve.py; `voco bench-serve` is bench/serve.py.
"""
