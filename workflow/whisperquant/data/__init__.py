"""Data acquisition: pinned artifacts (one downloader), audio decoding, corpus manifests, corpus sources."""
