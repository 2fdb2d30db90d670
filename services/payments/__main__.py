from services.payments.wiring import main

main()
