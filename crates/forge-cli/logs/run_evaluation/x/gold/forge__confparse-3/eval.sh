#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 0cc664be0d8b3ab145233922460eeaf799eb3dd2
restore() {
  for f in "$@"; do
    if git cat-file -e 0cc664be0d8b3ab145233922460eeaf799eb3dd2:"$f" 2>/dev/null; then git checkout -q 0cc664be0d8b3ab145233922460eeaf799eb3dd2 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_parser.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_parser.py b/tests/test_parser.py
index abf97b0..6fbe955 100644
--- a/tests/test_parser.py
+++ b/tests/test_parser.py
@@ -18,3 +18,12 @@ def test_key_outside_section():
 
 def test_later_key_wins():
     assert loads("[a]\nx = 1\nx = 2\n") == {"a": {"x": 2}}
+
+
+def test_repeated_section_is_merged():
+    text = "[db]\nhost = localhost\n[cache]\nsize = 10\n[db]\nport = 5432\n"
+    assert loads(text) == {"db": {"host": "localhost", "port": 5432}, "cache": {"size": 10}}
+
+
+def test_repeated_section_later_key_wins():
+    assert loads("[a]\nx = 1\ny = 1\n[a]\nx = 2\n") == {"a": {"x": 2, "y": 1}}
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_parser.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_parser.py'
exit $rc
