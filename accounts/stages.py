"""Login stages BuildX changes (allauth runs them in order after a user is identified)."""

from __future__ import annotations

from allauth.account.stages import PhoneVerificationStage


class SignupPhoneVerificationStage(PhoneVerificationStage):
    """Verify the phone number given at sign-up, and only then.

    allauth's stage also stops every later login of a user whose number is unverified until a code
    sent to it is typed. Numbers that admins typed before phones were verified are such numbers: their
    owners would be locked out by a number they may no longer have. They verify it, if they want to,
    on the account page.
    """

    def handle(self):
        if not self.login.signup:
            return None, True
        return super().handle()
