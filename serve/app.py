"""Ray Serve entry point of the upscaling endpoint (the application lives in oss_cluster/serving/app.py).

    serve run serve.app:app                      # development: an untrained Pico student, ONNX Runtime
    serve run serve/config.yaml                  # the deployment config (imports oss_cluster.serving.app:build_app)
    serve deploy serve/config.yaml               # onto a running cluster (ray start / cluster.yaml)
"""

from oss_cluster.serving.app import build_app

app = build_app
