#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 7a33e8fa5cac5298ccedea5b9de3d7412e32e367
restore() {
  for f in "$@"; do
    if git cat-file -e 7a33e8fa5cac5298ccedea5b9de3d7412e32e367:"$f" 2>/dev/null; then git checkout -q 7a33e8fa5cac5298ccedea5b9de3d7412e32e367 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_align.py' 'tests/test_render.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_align.py b/tests/test_align.py
index 7cc97e8..cb77d25 100644
--- a/tests/test_align.py
+++ b/tests/test_align.py
@@ -12,3 +12,10 @@ def test_empty_cells_do_not_count():
 
 def test_all_empty_column_is_left():
     assert column_alignments([[""], [""]], 1) == ["left"]
+
+
+def test_numbers_in_every_notation():
+    for text in ["-3", "2.50", "+7", "1e-3", "1,234.5", " 42 "]:
+        assert is_number(text), text
+    for text in ["nan", "inf", "v1", "1.2.3", "-"]:
+        assert not is_number(text), text
diff --git a/tests/test_render.py b/tests/test_render.py
index 40d9210..48df82f 100644
--- a/tests/test_render.py
+++ b/tests/test_render.py
@@ -41,3 +41,13 @@ def test_too_many_cells():
 def test_wide_characters_are_aligned():
     out = render([["東京", 1], ["Paris", 2]], headers=["city", "n"])
     assert out.splitlines()[2:] == ["| 東京  |   1 |", "| Paris |   2 |"]
+
+
+def test_negative_and_decimal_numbers_are_right_aligned():
+    out = render([["-4", "1.5"], ["12", "10.25"]], headers=["delta", "ratio"])
+    assert out.splitlines() == [
+        "| delta | ratio |",
+        "| ----: | ----: |",
+        "|    -4 |   1.5 |",
+        "|    12 | 10.25 |",
+    ]
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_align.py' 'tests/test_render.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_align.py' 'tests/test_render.py'
exit $rc
