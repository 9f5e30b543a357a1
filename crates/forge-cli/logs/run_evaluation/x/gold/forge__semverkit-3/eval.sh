#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat a2937720e08b933f12772d15c074c1b5ff723911
restore() {
  for f in "$@"; do
    if git cat-file -e a2937720e08b933f12772d15c074c1b5ff723911:"$f" 2>/dev/null; then git checkout -q a2937720e08b933f12772d15c074c1b5ff723911 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_bump.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_bump.py b/tests/test_bump.py
index 81531e3..709222e 100644
--- a/tests/test_bump.py
+++ b/tests/test_bump.py
@@ -18,3 +18,14 @@ def test_bump(version, part, expected):
 def test_bad_part():
     with pytest.raises(ValueError):
         bump("1.0.0", "micro")
+
+
+@pytest.mark.parametrize("version,part,expected", [
+    ("2.0.0-rc.1", "major", "2.0.0"),
+    ("1.3.0-rc.1", "minor", "1.3.0"),
+    ("1.2.4-rc.1", "patch", "1.2.4"),
+    ("1.2.4-rc.1", "minor", "1.3.0"),
+    ("1.2.3+build.7", "patch", "1.2.4"),
+])
+def test_bump_releases_prereleases_and_drops_build(version, part, expected):
+    assert bump(version, part) == expected
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_bump.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_bump.py'
exit $rc
