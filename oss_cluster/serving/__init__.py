"""Ray Serve upscaling endpoint: request codec, inference backends, and the Serve application."""
