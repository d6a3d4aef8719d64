from caraway import shared_task


@shared_task(name="billing.tasks.invoice_total")
def invoice_total(amounts):
    return sum(amounts)
