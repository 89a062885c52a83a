-- Stream messages the worker could not store after WORKER_MAX_DELIVERIES attempts: kept here,
-- whole, so that no accepted event is dropped. `audit-service dead-letters` lists them and
-- re-drives them into the stream once the cause is fixed (the row is removed then).
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    stream_seq  bigint NOT NULL UNIQUE,        -- a redelivered message is kept once
    subject     text NOT NULL,                 -- the tenant's subject it was published to
    msg_id      text,                          -- its Nats-Msg-Id
    data        bytea NOT NULL,
    error       text NOT NULL,
    deliveries  integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
