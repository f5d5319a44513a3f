from django.db import migrations

# Wake the relay when outbox rows are committed: one NOTIFY per inserting statement, delivered at commit,
# so the API transaction pays no extra round trip and a rolled-back insert wakes nobody.
CREATE = """
CREATE OR REPLACE FUNCTION sagas_outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('sagas_outbox', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER sagas_outbox_notify AFTER INSERT ON sagas_outboxmessage
    FOR EACH STATEMENT EXECUTE FUNCTION sagas_outbox_notify();
"""
DROP = """
DROP TRIGGER IF EXISTS sagas_outbox_notify ON sagas_outboxmessage;
DROP FUNCTION IF EXISTS sagas_outbox_notify();
"""


class Migration(migrations.Migration):
    dependencies = [("sagas", "0001_initial")]
    operations = [migrations.RunSQL(CREATE, DROP)]
