"""The one check for names that become paths (thorax_ray.names)."""
import pytest

from thorax_ray.names import UnsafeNameError, check_names, safe_name, unsafe_reason


@pytest.mark.parametrize("name", ["../../../x.png", "..", ".", "", "/etc/passwd", "images/a.png", "a\\b.png",
                                  "C:x.png", "s3://bucket/x.png", "a\x00b.png", "a\nb.png", "~root.png",
                                  " a.png", "a.png ", None, 3])
def test_names_that_could_leave_their_folder_are_rejected(name):
    assert unsafe_reason(name) is not None
    with pytest.raises(UnsafeNameError, match=r"^in.csv: image name .* is not a plain file name \("):
        safe_name("image name", name, where="in.csv")


@pytest.mark.parametrize("name", ["00000001_000.png", "model-v2.1", "a..b.png", ".hidden.png", "名前.png"])
def test_plain_names_pass_unchanged(name):
    assert safe_name("image name", name) == name


def test_a_column_of_names_reports_the_row():
    check_names("image name", ["a.png", "b.png"], where="list.parquet")
    with pytest.raises(UnsafeNameError, match=r"list.parquet, row 2: image name '../x.png'"):
        check_names("image name", ["a.png", "../x.png", "/y.png"], where="list.parquet")
