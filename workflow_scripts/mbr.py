"""Rule `mbr`: embed every SeaLong output and score it by MBR (thin adapter)."""
from longmab.io import read_jsonl, write_jsonl
from longmab.logs import setup_logging
from longmab.stages.embed import load_encoder
from longmab.stages.sealong import score_sealong


def main(smk):
    log = setup_logging(smk.log[0])
    p = smk.params
    rows = read_jsonl(smk.input.samples)
    counts: dict = {}
    # whole outputs, no query prefix (SeaLong embeds the outputs themselves)
    encode = load_encoder(str(smk.input.embedder[0]) if smk.input.get("embedder") else p.embedder,
                          trust_remote_code=p.trust_remote_code, max_seq_length=p.max_seq_length,
                          min_seq_length=p.min_seq_length,
                          encode_kwargs=p.encode_kwargs, counts=counts) if rows else None
    scored = score_sealong(rows, encode)
    write_jsonl(smk.output[0], scored)
    if counts.get("cut"):
        log.warning("mbr: %d of %d outputs are longer than the embedder reads (max_seq_length %d): their "
                    "ends (often the final answer) do not enter the MBR score; raise "
                    "pairs.sealong.mbr_max_seq_length or use an embedder with a longer window",
                    counts["cut"], counts["texts"], counts["max_seq_length"])
    log.info("mbr: %d samples scored (%d outputs, %d cut)", len(scored), counts.get("texts", 0), counts.get("cut", 0))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
