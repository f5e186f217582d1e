import pytest

from spark_tui.commands.bench import reference_target
from spark_tui.core.catalog.published import figures_for, load_figures, plot_reference
from spark_tui.errors import ProfileError


def test_shipped_figures_load_with_sources():
    fs = load_figures()
    assert len(fs) >= 7 and all(f.source for f in fs)
    spark = figures_for("dgx-spark", "redhatai-nvfp4")
    assert [(f.concurrency, f.tok_s) for f in spark] == [(1, 55.9), (32, 433.4)]
    assert plot_reference(spark) == {32: (433.4, "published, MTP k=1")}
    assert "55.9 tok/s per user at concurrency 1, MTP k=1" in spark[0].label()
    assert figures_for("b200") == []  # none published (FACTS.md §7)


@pytest.mark.parametrize("row,msg", [
    ('device="d"\ncheckpoint="c"\nconcurrency=1\nmtp=0\ntok_s=1.0\nmetric="per_user"\nsource=""', "no source"),
    ('device="d"\ncheckpoint="c"\nconcurrency=1\nmtp=0\nmetric="per_user"\nsource="x"', "missing"),
    ('device="d"\ncheckpoint="c"\nconcurrency=1\nmtp=0\ntok_s=1\nmetric="fast"\nsource="x"', "metric"),
])
def test_a_bad_row_fails_naming_the_file_and_row(row, msg):
    with pytest.raises(ProfileError) as e:
        load_figures("[[figure]]\n" + row, name="my.toml")
    assert "my.toml: figure #1" in e.value.message and msg in e.value.message


def test_reference_target(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path))
    assert reference_target("http://127.0.0.1:8000", "dgx-spark", "RedHatAI/Qwen3.6-35B-A3B-NVFP4") == (
        "dgx-spark", "redhatai-nvfp4")
    probe = {"gpus": [{"name": "NVIDIA GB10", "sm": "sm_121"}]}
    assert reference_target("http://127.0.0.1:8000", None, None, probe) == ("dgx-spark", None)
    assert reference_target("http://127.0.0.1:8000", None, "/some/local/path") == (None, None)
