"""Job logs keep every record after a library reconfigures logging (vLLM's import does)."""
import logging
import logging.config

from longmab.logs import setup_logging


def test_log_file_survives_dictconfig(tmp_path):
    path = tmp_path / "job.log"
    path.write_text("stale line of an earlier attempt\n")
    log = setup_logging(path)
    log.info("before the engine")
    # what `import vllm` does: dictConfig closes every existing handler (disable_existing_loggers False)
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    log.info("after the engine started")
    for h in log.handlers:
        h.flush()
    text = path.read_text()
    assert "stale line" not in text  # a new attempt starts a fresh log
    assert "before the engine" in text and "after the engine started" in text
