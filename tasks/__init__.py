"""The task engine the planner, coder and reviewer agents serve: plans, SEARCH/REPLACE edits,
git worktrees, reviews with evidence, and the outcomes memory keeps."""
