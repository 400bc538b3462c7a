#!/usr/bin/env bash
# Post the sample exam and one submission to a running gradeflow (make run), then show the result.
set -euo pipefail
API=${API:-http://127.0.0.1:8000}
here="$(cd "$(dirname "$0")" && pwd)"
TOKEN=${TOKEN:-$("$here/../.venv/bin/gradeflow" token --tenant demo-school --role admin)}
auth=(-H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json")

exam_id=$(curl -sf "${auth[@]}" -d @"$here/exam.json" "$API/v1/exams" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "exam: $exam_id"
body=$(cat <<JSON
{"exam_id": "$exam_id", "student_id": "student-42", "answers": {
  "q1": "mitochondrion", "q2": ["adenine", "guanine"], "q3": 9.8,
  "q4": "It makes sugar and releases oxygen.",
  "q5": "Individuals differ (variation); traits are inherited, and those that survive reproduce more."}}
JSON
)
reply=$(curl -sf "${auth[@]}" -H "Idempotency-Key: demo-$(date +%s)" -d "$body" "$API/v1/submissions")
echo "submitted: $reply"
sid=$(echo "$reply" | python3 -c 'import json,sys; print(json.load(sys.stdin)["submission_id"])')
for _ in $(seq 1 50); do
  status=$(curl -sf "${auth[@]}" "$API/v1/submissions/$sid" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [ "$status" = queued ] || [ "$status" = grading ] || break
  sleep 0.2
done
curl -sf "${auth[@]}" "$API/v1/submissions/$sid" | python3 -m json.tool
