from caraway import Caraway

# The seed's app, with `celery` replaced by `caraway`. With no broker configured it runs on
# the embedded default (one SQLite file, caraway.sqlite3, beside this module); set
# CARAWAY_BROKER_URL / CARAWAY_RESULT_BACKEND to use the seed's RabbitMQ and Redis instead.
app = Caraway("proj", include=["proj.tasks"])

# Optional configuration, see the application user guide.
app.conf.update(
    result_expires=3600,
)

if __name__ == "__main__":
    app.start()
