"""Tests of workers/: the backends, with AWS reached through moto's server over HTTP."""
