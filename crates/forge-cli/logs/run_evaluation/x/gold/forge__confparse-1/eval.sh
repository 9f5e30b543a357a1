#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 7c35ead0ad7065bbf91a86e0f5ccbb6013769588
restore() {
  for f in "$@"; do
    if git cat-file -e 7c35ead0ad7065bbf91a86e0f5ccbb6013769588:"$f" 2>/dev/null; then git checkout -q 7c35ead0ad7065bbf91a86e0f5ccbb6013769588 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_lexer.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_lexer.py b/tests/test_lexer.py
index b453d61..7c26fdb 100644
--- a/tests/test_lexer.py
+++ b/tests/test_lexer.py
@@ -19,3 +19,13 @@ def test_full_line_comments_ignored():
 def test_missing_separator_is_an_error():
     with pytest.raises(SyntaxError):
         tokenize("[s]\njustakey\n")
+
+
+def test_inline_comment_is_stripped():
+    assert loads("[s]\nport = 8080  # default port\n") == {"s": {"port": 8080}}
+    assert loads("[s]\nname = web ; the name\n") == {"s": {"name": "web"}}
+
+
+def test_hash_inside_quotes_or_words_is_kept():
+    conf = loads("[s]\ncolor = \"#ff0000\" # red\nchannel = irc#main\n")
+    assert conf == {"s": {"color": "#ff0000", "channel": "irc#main"}}
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_lexer.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_lexer.py'
exit $rc
