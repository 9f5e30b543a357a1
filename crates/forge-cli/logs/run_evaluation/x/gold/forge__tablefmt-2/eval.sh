#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat c05a0a3b38500ddad6fc5a6f308ca6491894f8ba
restore() {
  for f in "$@"; do
    if git cat-file -e c05a0a3b38500ddad6fc5a6f308ca6491894f8ba:"$f" 2>/dev/null; then git checkout -q c05a0a3b38500ddad6fc5a6f308ca6491894f8ba -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_parse.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_parse.py b/tests/test_parse.py
index 7e31bce..8bc4de2 100644
--- a/tests/test_parse.py
+++ b/tests/test_parse.py
@@ -25,3 +25,15 @@ def test_not_a_table():
         parse("| a | b |\n| x | y |")
     with pytest.raises(TableSyntaxError):
         parse("just text")
+
+
+def test_escaped_pipes_stay_in_their_cell():
+    headers, rows, _ = parse("| expr | meaning |\n|---|---|\n| a \\| b | a or b |")
+    assert headers == ["expr", "meaning"]
+    assert rows == [["a | b", "a or b"]]
+
+
+def test_render_then_parse_round_trips():
+    rows = [["x|y", "1"], ["z", "22"]]
+    headers, parsed, aligns = parse(render(rows, headers=["name", "n"]))
+    assert headers == ["name", "n"] and parsed == rows and aligns == ["left", "right"]
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_parse.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_parse.py'
exit $rc
