"""Bad input to any `course` subcommand gets a non-zero exit and one sentence naming the problem,
never a traceback, and before any model or data set is loaded."""

import json

import pytest

from course_utils.cli import main


@pytest.fixture()
def files(tmp_path):
    """Broken inputs of every format the course reads."""
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 au lait.\n\nSecond document.".encode("latin-1"))
    bad_index = tmp_path / "bad-index"
    bad_index.mkdir()
    (bad_index / "meta.json").write_text("{not json", encoding="utf-8")
    for name in ("index.faiss", "vectors.npy", "chunks.jsonl"):
        (bad_index / name).write_text("", encoding="utf-8")
    half_index = tmp_path / "half-index"
    half_index.mkdir()
    (half_index / "meta.json").write_text("{}", encoding="utf-8")
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello", encoding="utf-8")
    run = tmp_path / "broken-run" / "checkpoint"
    run.mkdir(parents=True)
    (run / "state.json").write_text("{\"step\": 3", encoding="utf-8")
    (tmp_path / "no-checkpoint").mkdir()
    return tmp_path


CASES = {
    # unknown or unreachable hub ids, and folders that are not models (no network here: the hub is unreachable)
    "sft hub id": (["sft", "--base-model", "no-such-owner/no-such-model"], "no-such-owner/no-such-model"),
    "dpo hub id": (["dpo", "--sft-model", "no-such-owner/model"], "--sft-model"),
    "reward hub id": (["reward-model", "--base-model", "nobody/nothing"], "not in the local Hugging Face cache"),
    "lora bad id": (["lora", "--base-model", "not a model id!"], "neither a model folder nor a hub id"),
    "probe missing folder": (["probe", "--model", "./no/such/folder"], "No model folder at ./no/such/folder"),
    "eval folder without config": (["eval", "--model", "{tmp}/not-a-model"], "has no config.json"),
    # numbers out of range
    "pretrain steps 0": (["pretrain", "--preset", "tiny", "--steps", "0"], "--steps must be at least 1"),
    "pretrain experts negative": (["pretrain", "--preset", "tiny", "--experts", "-2"], "--experts must be 0"),
    "pretrain top-k above experts": (["pretrain", "--preset", "tiny", "--experts", "2", "--top-k", "3"],
                                     "top_k=3 must be between 1 and n_experts=2"),
    "rag k 0": (["rag", "ask", "Where?", "--index", "{tmp}/bad-index", "--k", "0"], "--k must be at least 1"),
    "rag k negative": (["rag", "ask", "Where?", "--index", "{tmp}/bad-index", "--k", "-3"], "got -3"),
    "eval limit 0": (["eval", "--limit", "0"], "--limit must be at least 1"),
    "lora rank 0": (["lora", "--rank", "0"], "--rank must be at least 1"),
    "chunk overlap": (["rag", "index", "{tmp}", "--out", "{tmp}/o", "--chunk-overlap", "-1"], "--chunk-overlap"),
    # questions with nothing to ask
    "empty question": (["rag", "ask", "", "--index", "{tmp}/bad-index"], "has no words"),
    "punctuation question": (["rag", "ask", "?!  ...", "--index", "{tmp}/bad-index"], "has no words"),
    # malformed files of the course's formats, named
    "index meta not json": (["rag", "ask", "Where?", "--index", "{tmp}/bad-index", "--no-generate"],
                            "bad-index/meta.json is not a course index"),
    "index incomplete": (["rag", "ask", "Where?", "--index", "{tmp}/half-index", "--no-generate"],
                         "index.faiss, vectors.npy, chunks.jsonl missing"),
    "index missing": (["rag", "ask", "Where?", "--index", "{tmp}/nowhere", "--no-generate"], "not a course index"),
    "text not utf-8": (["pretrain", "--preset", "tiny", "--text-file", "{tmp}/latin1.txt", "--steps", "1"],
                       "latin1.txt, line 1: not valid UTF-8"),
    "text file missing": (["pretrain", "--preset", "tiny", "--text-file", "{tmp}/missing.txt"], "No such text file"),
    "checkpoint state not json": (["pretrain", "--preset", "tiny", "--text-file", "{tmp}/ok.txt", "--out",
                                   "{tmp}/broken-run", "--resume", "--steps", "4"], "broken-run/checkpoint/state.json"),
    "export without checkpoint": (["export-hf", "--run", "{tmp}/no-checkpoint", "--out", "{tmp}/hf"], "No checkpoint"),
    "notebook missing": (["notebooks", "{tmp}/nothing.ipynb"], "No such notebook"),
    "agent without a question": (["agent", "ask", " ? "], "has no words"),
    "agent model missing": (["agent", "ask", "Who led the Famine of Alonath?", "--model", "{tmp}/no-model"],
                            "No model folder"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_sentence(name, files, capsys):
    argv, expected = CASES[name]
    (files / "ok.txt").write_text("\n\n".join(f"Document {i} about Orin and Vessary." for i in range(40)))
    argv = [a.replace("{tmp}", str(files)) for a in argv]
    code = main(argv + ["--json"])
    out = capsys.readouterr()
    assert code != 0, f"`course {' '.join(argv)}` should fail"
    message = out.err.strip().splitlines()
    assert len(message) == 1 and message[0].startswith(f"course {argv[0]}: error: "), out.err
    assert expected in message[0], message[0]
    assert "Traceback" not in out.err + out.out
    assert json.loads(out.out.strip().splitlines()[-1])["ok"] is False


def test_a_broken_artifact_record_is_named(capsys):
    from course_utils.artifacts import load_or_build

    folder = load_or_build("demo", {"a": 1}, lambda f: None, verbose=False)
    (folder / "artifact.json").write_text("{\"name\": ", encoding="utf-8")
    assert main(["artifacts", "--json"]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'artifact.json'} is not an artifact record" in err and "Traceback" not in err
