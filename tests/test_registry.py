"""The registry: every manifest validates, names resolve, pinned files match the published resources."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from a2fbench.errors import SpecError, UnknownNameError
from a2fbench.registry import (
    all_spaces,
    all_specs,
    get_space,
    get_spec,
    manifests_dir,
    resolve,
)

IDS = [f"D{i}" for i in range(8)]


def test_every_manifest_loads_with_unique_ids_and_aliases() -> None:
    specs = all_specs()
    assert [s.id for s in specs] == IDS
    names = [n.lower() for s in specs for n in (s.id, *s.aliases)]
    assert len(names) == len(set(names))
    spaces = all_spaces()
    for s in specs:
        assert s.space in spaces
        assert get_space(s.space).dim > 0
        assert s.regions.default in s.regions.sets
        assert s.layouts and s.fps > 0 and s.fps_native >= s.fps
        assert s.dtype in s.accepted_dtypes
        if s.subjects is not None:
            assert len(set(s.subjects)) == len(s.subjects)
            for st in s.splits.sets.values():
                assert st.subjects == "all" or set(st.subjects) <= set(s.subjects)
        for src in s.sources:
            if src.kind == "url":
                assert all(f.url and f.sha256 and f.size for f in src.files)
            else:
                assert src.instructions and src.files


def test_contract_table_facts() -> None:
    """contract.md's dataset table: spaces, native and benchmark fps, aliases."""
    want = {"D0": ("biwi_23370_verts", 25, 25, "biwi"), "D1": ("flame_5023_verts", 60, 30, "vocaset"),
            "D2": ("meshtalk_6172_verts", 30, 30, "multiface"), "D3": ("arkit52", 30, 30, "hdtf"),
            "D4": ("arkit52", 30, 30, "ravdess"), "D5": ("flame_params_413", 30, 30, "ffpp"),
            "D6": ("arkit51", 60, 30, "zh-speech"), "D7": ("arkit51", 60, 30, "songs")}
    for i, (space, fn, f, alias) in want.items():
        s = get_spec(i)
        assert (s.space, s.fps_native, s.fps) == (space, fn, f)
        assert get_spec(alias) is s
    assert get_spec("voca").id == "D1" and get_spec("meshtalk").id == "D2"
    assert get_space_dims() == {"biwi_23370_verts": 70110, "flame_5023_verts": 15069, "meshtalk_6172_verts": 18516,
                                "arkit52": 52, "arkit51": 51, "flame_params_413": 413}


def get_space_dims() -> dict[str, int]:
    return {k: v.dim for k, v in all_spaces().items()}


def _readme_rows(shared: Path) -> list[tuple[str, str, str]]:
    rows = []
    for line in (shared / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[2].startswith("https://") and re.fullmatch(r"[0-9a-f]{64}", cells[3]):
            rows.append((cells[0], cells[2], cells[3]))
    return rows


def test_pinned_files_equal_the_published_resources(shared_resources: Path) -> None:
    rows = _readme_rows(shared_resources)
    assert len(rows) == 11
    by_url = {}
    for s in all_specs():
        for f in s.files():
            if f.url:
                by_url.setdefault(f.url, []).append((s.id, f))
    for local, url, sha in rows:
        if local.startswith("audio/"):
            continue  # the demo clip is a test input, not a dataset file
        assert url in by_url, f"{url} is public but no manifest pins it"
        for _sid, f in by_url[url]:
            assert f.sha256 == sha
            assert f.size == (shared_resources / local).stat().st_size
            assert Path(f.path).name == Path(local).name
    assert set(by_url) <= {u for _l, u, _s in rows}, "a manifest pins a URL the resources README does not list"


def _copy_manifests(tmp_path: Path) -> Path:
    d = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), d)
    return d


def _edit(d: Path, name: str, fn) -> None:  # noqa: ANN001
    p = d / name
    doc = yaml.safe_load(p.read_text())
    fn(doc)
    p.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize("where,edit,needle", [
    ("top", lambda d: d.update(colour="blue"), "colour"),
    ("nested", lambda d: d["sources"][1]["files"][0].update(md5="x"), "sources.1.files.0.md5"),
    ("url without sha256", lambda d: d["sources"][1]["files"][0].pop("sha256"), "needs url and sha256"),
    ("bad sha", lambda d: d["sources"][1]["files"][0].update(sha256="ABC"), "sha256"),
    ("unknown split subject", lambda d: d["splits"]["sets"]["train"]["subjects"].append("Z9"), "Z9"),
    ("escaping path", lambda d: d["sources"][1]["files"][0].update(path="../x.txt"), "may not leave"),
])
def test_invalid_manifests_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str,
                                               edit, needle: str) -> None:  # noqa: ANN001
    d = _copy_manifests(tmp_path)
    _edit(d, "D0_biwi.yaml", edit)
    monkeypatch.setenv("A2FBENCH_MANIFESTS", str(d))
    with pytest.raises(SpecError) as e:
        all_specs()
    msg = str(e.value)
    assert "\n" not in msg and "D0_biwi.yaml" in msg and needle in msg, msg


def test_unknown_space_and_duplicate_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _copy_manifests(tmp_path)
    d2 = tmp_path / "m2"
    shutil.copytree(d, d2)
    _edit(d, "D3_3detf_hdtf.yaml", lambda m: m.update(space="arkit53"))
    monkeypatch.setenv("A2FBENCH_MANIFESTS", str(d))
    with pytest.raises(SpecError, match="arkit53"):
        all_specs()
    _edit(d2, "D3_3detf_hdtf.yaml", lambda m: m.update(aliases=["biwi"]))
    monkeypatch.setenv("A2FBENCH_MANIFESTS", str(d2))
    with pytest.raises(SpecError, match="'biwi' is used by both"):
        all_specs()


def test_resolve_ids_aliases_lists_ranges() -> None:
    ids = lambda x: [s.id for s in resolve(x)]  # noqa: E731
    assert ids("D0..D7") == IDS
    assert ids("D7..D0") == IDS
    assert ids("D2..D4") == ["D2", "D3", "D4"]
    assert ids("D3,D0") == ["D0", "D3"]
    assert ids("vocaset") == ["D1"]
    assert ids("BIWI,d1, meshtalk") == ["D0", "D1", "D2"]
    assert ids(["D1", "voca", "D0..D1"]) == ["D0", "D1"]
    assert ids("biwi..ravdess") == ["D0", "D1", "D2", "D3", "D4"]


@pytest.mark.parametrize("bad,hint", [("vocast", "vocaset"), ("D8", "D7"), ("bewi", "biwi"), ("D0..D9", "D"),
                                      ("multifase", "multiface")])
def test_unknown_names_answer_with_did_you_mean(bad: str, hint: str) -> None:
    with pytest.raises(UnknownNameError) as e:
        resolve(bad)
    msg = str(e.value)
    assert "\n" not in msg and f"did you mean '{hint}" in msg and "a2fbench list" in msg


def test_empty_selection_is_an_error() -> None:
    with pytest.raises(UnknownNameError, match="at least one dataset"):
        resolve(" , ")


def test_full_stand_in_matches_manifest_hours() -> None:
    """`synth --size full` is the scale the manifest states (Table 1 hours), within 6%."""
    from a2fbench.sources.synth import plan

    for s in all_specs():
        hours = sum(p.seconds for p in plan(s, "full")) / 3600
        assert abs(hours - s.hours) / s.hours < 0.06, (s.id, hours, s.hours)


def _run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    from a2fbench.cli import main

    monkeypatch.setattr("sys.argv", ["a2fbench", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_cli_list_and_info(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, data_tiny: Path) -> None:
    code, out, _ = _run_cli(["list", "--data", str(data_tiny)], monkeypatch, capsys)
    assert code == 0
    for s in all_specs():
        line = next(ln for ln in out.splitlines() if ln.startswith(s.id + " "))
        assert s.space in line and "yes" in line
    code, out, _ = _run_cli(["info", "vocaset", "--data", str(data_tiny)], monkeypatch, capsys)
    assert code == 0
    spec = get_spec("D1")
    for f in spec.files():
        assert f.path in out and (f.sha256 is None or f.sha256 in out)
    assert "https://voca.is.tue.mpg.de/" in out and "SYNTHETIC" in out and "FaceTalk_170809_00138_TA" in out
    code, out, err = _run_cli(["info", "vocast"], monkeypatch, capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip().startswith("error:") and "did you mean 'vocaset'" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run_cli(["prepare", "D9", "--raw", "x", "--out", "y"], monkeypatch, capsys)
    assert code == 1 and "did you mean" in err
