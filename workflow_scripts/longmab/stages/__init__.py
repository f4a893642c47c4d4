"""One function per pipeline stage, on plain Python data; rule scripts call these."""
