# The corpus, its tokenizer and token files, the study's plan, and every spec file. One
# write_spec rule writes the spec of every series of every phase (SPECS in common.smk).
rule write_spec:
    output:
        "results/specs/{name}.json",
    log:
        "results/logs/write_spec/{name}.log",
    benchmark:
        "results/benchmarks/write_spec/{name}.tsv"
    wildcard_constraints:
        name=one_of(SPECS),
    localrule: True
    conda:
        "../envs/scalinglab.yaml"
    params:
        spec=spec_json,
    shell:
        "python -m scalinglab write-spec --out {output:q} {params.spec:q} 2> {log:q}"


rule prepare_corpus:
    input:
        spec="results/specs/corpus.json",
    output:
        train="results/data/corpus/train.jsonl",
        val="results/data/corpus/val.jsonl",
        manifest="results/data/corpus/manifest.json",
    log:
        "results/logs/prepare_corpus.log",
    benchmark:
        "results/benchmarks/prepare_corpus.tsv"
    conda:
        "../envs/scalinglab.yaml"
    params:
        out_dir=subpath(output.manifest, parent=True),
    shell:
        "python -m scalinglab data prepare --config {input.spec} --out-dir {params.out_dir}"
        " > {log} 2>&1"


rule train_tokenizer:
    input:
        train="results/data/corpus/train.jsonl",
    output:
        "results/data/tokenizer/tokenizer.json",
    log:
        "results/logs/train_tokenizer.log",
    benchmark:
        "results/benchmarks/train_tokenizer.tsv"
    conda:
        "../envs/scalinglab.yaml"
    params:
        corpus_dir=subpath(input.train, parent=True),
        vocab_size=STUDY.tokenizer.vocab_size,
    shell:
        "python -m scalinglab data tokenizer --corpus-dir {params.corpus_dir}"
        " --vocab-size {params.vocab_size} --out {output} > {log} 2>&1"


rule encode_corpus:
    input:
        tokenizer="results/data/tokenizer/tokenizer.json",
        train="results/data/corpus/train.jsonl",
        val="results/data/corpus/val.jsonl",
    output:
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    log:
        "results/logs/encode_corpus.log",
    benchmark:
        "results/benchmarks/encode_corpus.tsv"
    conda:
        "../envs/scalinglab.yaml"
    params:
        corpus_dir=subpath(input.train, parent=True),
        out_dir=subpath(output.meta, parent=True),
    shell:
        "python -m scalinglab data encode --tokenizer {input.tokenizer}"
        " --corpus-dir {params.corpus_dir} --out-dir {params.out_dir} > {log} 2>&1"


rule plan_study:
    input:
        spec="results/specs/study.json",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        "results/study/plan.csv",
    log:
        "results/logs/plan_study.log",
    benchmark:
        "results/benchmarks/plan_study.tsv"
    # a check of a few milliseconds: not worth a queue round trip on a cluster
    localrule: True
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab isoflop plan --config {input.spec} --meta {input.meta}"
        " --out {output} > {log} 2>&1"
