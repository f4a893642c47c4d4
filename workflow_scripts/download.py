"""Rules `download_model` / `download_benchmark`: one hub download into the shared cache (thin adapter)."""
from longmab.hub import download_benchmark, download_model, token_from_env, write_record
from longmab.logs import setup_logging


def main(smk):
    log = setup_logging(smk.log[0])
    p = smk.params
    token = token_from_env(p.token_env)  # never logged, never written
    if p.kind == "model":
        rec = download_model(p.repo_id, p.revision, cache=p.cache_dir, token=token,
                             ignore_patterns=p.ignore_patterns)
        write_record(smk.output[0], rec)
        log.info("model %s at %s (commit %s): %d files in %s", rec["repo_id"], rec["revision"], rec["commit"],
                 len(rec["files"]), rec["local_path"])
    else:
        rec = download_benchmark(p.name, p.format, smk.output.data, p.spec, cache=p.cache_dir, token=token)
        write_record(smk.output.record, rec)
        log.info("benchmark %s from %s/%s%s at %s (commit %s): %d rows -> %s", rec["name"], rec["repo_id"],
                 rec["file"], f"!{rec['member']}" if rec["member"] else "", rec["revision"], rec["commit"],
                 rec["rows"], rec["path"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
