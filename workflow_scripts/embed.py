"""Rule `embed`: initial arm values for one shard (thin adapter)."""
from longmab.io import read_jsonl, write_jsonl
from longmab.logs import setup_logging
from longmab.stages.embed import initial_values, load_encoder


def main(smk):
    setup_logging(smk.log[0])
    p = smk.params
    rows = read_jsonl(smk.input.probes)
    encode = None if p.method == "random" or not rows else load_encoder(
        str(smk.input.embedder[0]) if smk.input.get("embedder") else p.embedder,  # download record or name
        trust_remote_code=p.trust_remote_code)
    write_jsonl(smk.output[0], initial_values(rows, p.method, p.seed, encode, p.prefix))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
