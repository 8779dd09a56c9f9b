"""Settings split by purpose: base (shared), local (the embedded default), production, test."""
