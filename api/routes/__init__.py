"""All API routers, gathered into one ``api_router`` mounted by :func:`api.app.create_app`."""

from fastapi import APIRouter

from api.routes import (
    answers,
    batches,
    dlq,
    exam_counts,
    exams,
    gradebook,
    health,
    history,
    listing,
    metrics,
    progress,
    regrade_requests,
    retry,
    review,
    submissions,
    traces,
    webhooks,
    ws,
)

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(exams.router)
api_router.include_router(exam_counts.router)
api_router.include_router(gradebook.router)
api_router.include_router(listing.router)
api_router.include_router(submissions.router)
api_router.include_router(answers.router)
api_router.include_router(progress.router)
api_router.include_router(review.router)
api_router.include_router(history.router)
api_router.include_router(regrade_requests.router)
api_router.include_router(retry.router)
api_router.include_router(batches.router)
api_router.include_router(dlq.router)
api_router.include_router(webhooks.router)
api_router.include_router(traces.router)
api_router.include_router(ws.router)
api_router.include_router(metrics.router)

__all__ = ["api_router"]
