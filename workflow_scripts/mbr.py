"""Rule `mbr`: embed every SeaLong output and score it by MBR (thin adapter)."""
from longmab.io import read_jsonl, write_jsonl
from longmab.logs import setup_logging
from longmab.stages.embed import load_encoder
from longmab.stages.sealong import score_sealong


def main(smk):
    log = setup_logging(smk.log[0])
    p = smk.params
    rows = read_jsonl(smk.input.samples)
    encode = load_encoder(str(smk.input.embedder[0]) if smk.input.get("embedder") else p.embedder,
                           trust_remote_code=p.trust_remote_code) if rows else None
    prefix = p.prefix or ""
    scored = score_sealong(rows, (lambda texts: encode([prefix + t for t in texts])) if rows else None)
    write_jsonl(smk.output[0], scored)
    log.info("mbr: %d samples scored", len(scored))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
