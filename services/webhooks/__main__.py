from services.webhooks.wiring import main

main()
